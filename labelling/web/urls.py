"""URL routes of the rater, reviewer and dashboard pages."""

from django.urls import path

from labelling.web import dashboard, learning, review, views

urlpatterns = [
    path("projects/<slug:slug>/label/", views.label, name="label"),
    path("projects/<slug:slug>/review/", review.review, name="review"),
    path("projects/<slug:slug>/dashboard/", dashboard.dashboard, name="dashboard"),
    path("projects/<slug:slug>/learning/", learning.learning, name="learning"),
    path(
        "projects/<slug:slug>/raters/<int:user_id>/resume/",
        dashboard.rater_resume_view,
        name="dashboard-rater-resume",
    ),
]
