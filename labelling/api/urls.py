"""URL routes of the REST API, mounted at /api/v1/."""

from django.urls import path

import labelling.converters  # noqa: F401 - registers the <id:...> converter
from labelling.api import (
    assignments,
    comparison,
    consent,
    dataset,
    explorer,
    items,
    learning,
    projects,
    quality,
    snapshots,
    training,
)

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
        "projects/<slug:slug>/items/<id:item_id>/",
        items.ItemDetailApi.as_view(),
        name="api-project-item",
    ),
    path(
        "projects/<slug:slug>/items/<id:item_id>/gold/",
        quality.GoldApi.as_view(),
        name="api-project-item-gold",
    ),
    path(
        "projects/<slug:slug>/items/<id:item_id>/annotations/",
        quality.ItemAnnotationsApi.as_view(),
        name="api-project-item-annotations",
    ),
    path(
        "projects/<slug:slug>/items/<id:item_id>/review/",
        quality.ReviewApi.as_view(),
        name="api-project-item-review",
    ),
    path("projects/<slug:slug>/agreement/", quality.AgreementApi.as_view(), name="api-agreement"),
    path("projects/<slug:slug>/raters/", quality.RaterStatsApi.as_view(), name="api-raters"),
    path(
        "projects/<slug:slug>/raters/<id:user_id>/resume/",
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
    path(
        "projects/<slug:slug>/comparison/",
        comparison.ComparisonApi.as_view(),
        name="api-project-comparison",
    ),
    path(
        "projects/<slug:slug>/comparison/pairs/",
        comparison.ComparisonPairsApi.as_view(),
        name="api-project-comparison-pairs",
    ),
    path("projects/<slug:slug>/dataset/", dataset.DatasetApi.as_view(), name="api-project-dataset"),
    path(
        "projects/<slug:slug>/consent/withdraw/",
        consent.ConsentWithdrawApi.as_view(),
        name="api-project-consent-withdraw",
    ),
    path(
        "projects/<slug:slug>/snapshots/",
        snapshots.SnapshotsApi.as_view(),
        name="api-project-snapshots",
    ),
    path(
        "projects/<slug:slug>/snapshots/<id:snapshot_id>/",
        snapshots.SnapshotDetailApi.as_view(),
        name="api-project-snapshot",
    ),
    path(
        "projects/<slug:slug>/snapshots/<id:snapshot_id>/download/",
        snapshots.SnapshotDownloadApi.as_view(),
        name="api-project-snapshot-download",
    ),
    path(
        "projects/<slug:slug>/clusters/",
        explorer.ClustersApi.as_view(),
        name="api-project-clusters",
    ),
    path(
        "projects/<slug:slug>/clusters/<id:cluster_id>/items/",
        explorer.ClusterItemsApi.as_view(),
        name="api-project-cluster-items",
    ),
    path(
        "projects/<slug:slug>/items/bulk/",
        explorer.ItemsBulkApi.as_view(),
        name="api-project-items-bulk",
    ),
    path(
        "projects/<slug:slug>/items/<id:item_id>/similar/",
        explorer.ItemSimilarApi.as_view(),
        name="api-project-item-similar",
    ),
    path("projects/<slug:slug>/tags/", explorer.TagsApi.as_view(), name="api-project-tags"),
    path(
        "projects/<slug:slug>/duplicates/",
        explorer.DuplicatesApi.as_view(),
        name="api-project-duplicates",
    ),
    path(
        "projects/<slug:slug>/duplicates/release/",
        explorer.DuplicatesReleaseApi.as_view(),
        name="api-project-duplicates-release",
    ),
    path("projects/<slug:slug>/next/", assignments.NextApi.as_view(), name="api-project-next"),
    path(
        "assignments/<id:assignment_id>/submit/",
        assignments.SubmitApi.as_view(),
        name="api-assignment-submit",
    ),
    path(
        "assignments/<id:assignment_id>/skip/",
        assignments.SkipApi.as_view(),
        name="api-assignment-skip",
    ),
    path(
        "assignments/<id:assignment_id>/heartbeat/",
        assignments.HeartbeatApi.as_view(),
        name="api-assignment-heartbeat",
    ),
]
