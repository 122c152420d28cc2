"""URL routes of the REST API, mounted at /api/v1/."""

from django.urls import path

from labelling.api import assignments, items, learning, projects, quality, training

urlpatterns = [
    path("projects/", projects.ProjectListCreateApi.as_view(), name="api-projects"),
    path("projects/<slug:slug>/", projects.ProjectDetailApi.as_view(), name="api-project"),
    path(
        "projects/<slug:slug>/schemas/",
        projects.SchemaListCreateApi.as_view(),
        name="api-project-schemas",
    ),
    path(
        "projects/<slug:slug>/items/", items.ItemListImportApi.as_view(), name="api-project-items"
    ),
    path(
        "projects/<slug:slug>/items/<int:item_id>/",
        items.ItemDetailApi.as_view(),
        name="api-project-item",
    ),
    path(
        "projects/<slug:slug>/items/<int:item_id>/gold/",
        quality.GoldApi.as_view(),
        name="api-project-item-gold",
    ),
    path(
        "projects/<slug:slug>/items/<int:item_id>/annotations/",
        quality.ItemAnnotationsApi.as_view(),
        name="api-project-item-annotations",
    ),
    path(
        "projects/<slug:slug>/items/<int:item_id>/review/",
        quality.ReviewApi.as_view(),
        name="api-project-item-review",
    ),
    path("projects/<slug:slug>/agreement/", quality.AgreementApi.as_view(), name="api-agreement"),
    path("projects/<slug:slug>/raters/", quality.RaterStatsApi.as_view(), name="api-raters"),
    path(
        "projects/<slug:slug>/raters/<int:user_id>/resume/",
        quality.RaterResumeApi.as_view(),
        name="api-rater-resume",
    ),
    path(
        "projects/<slug:slug>/embeddings/",
        learning.EmbeddingsApi.as_view(),
        name="api-project-embeddings",
    ),
    path(
        "projects/<slug:slug>/training-runs/",
        training.TrainingRunsApi.as_view(),
        name="api-project-training-runs",
    ),
    path(
        "projects/<slug:slug>/learning-report/",
        training.LearningReportApi.as_view(),
        name="api-project-learning-report",
    ),
    path("projects/<slug:slug>/next/", assignments.NextApi.as_view(), name="api-project-next"),
    path(
        "assignments/<int:assignment_id>/submit/",
        assignments.SubmitApi.as_view(),
        name="api-assignment-submit",
    ),
    path(
        "assignments/<int:assignment_id>/skip/",
        assignments.SkipApi.as_view(),
        name="api-assignment-skip",
    ),
    path(
        "assignments/<int:assignment_id>/heartbeat/",
        assignments.HeartbeatApi.as_view(),
        name="api-assignment-heartbeat",
    ),
]
