"""URL routes of the rater, reviewer and dashboard pages."""

from django.urls import path

import labelling.converters  # noqa: F401 - registers the <id:...> converter
from labelling.web import dashboard, explorer, learning, review, tokens, views

urlpatterns = [
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path("projects/<slug:slug>/review/", review.review, name="review"),
    path("projects/<slug:slug>/dashboard/", dashboard.dashboard, name="dashboard"),
    path("projects/<slug:slug>/learning/", learning.learning, name="learning"),
    path("projects/<slug:slug>/explorer/", explorer.explorer, name="explorer"),
    path(
        "projects/<slug:slug>/explorer/search/",
        explorer.explorer_search,
        name="explorer-search",
    ),
    path(
        "projects/<slug:slug>/raters/<id:user_id>/resume/",
        dashboard.rater_resume_view,
        name="dashboard-rater-resume",
    ),
    path("tokens/", tokens.tokens, name="tokens"),
    path("tokens/<id:token_id>/revoke/", tokens.token_revoke_view, name="token-revoke"),
]
