"""URL routes of the rater pages."""

from django.urls import path

from labelling.web import views

urlpatterns = [
    path("projects/<slug:slug>/label/", views.label, name="label"),
]
