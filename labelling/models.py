"""Database models: projects, members, label schema versions, items and API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class BaseModel(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Project(BaseModel):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    guidelines = models.TextField(
        blank=True, help_text=_("Shown to raters beside every item. Markdown; raw HTML is not run.")
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, help_text=_("How many independent ratings each item needs.")
    )
    lease_ttl_seconds = models.PositiveIntegerField(
        default=600, help_text=_("How long a rater holds an item before it returns to the pool.")
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Quality control.
    gold_rate = models.FloatField(
        default=0.1, help_text=_("Share of a rater's items that are hidden gold items.")
    )
    gold_min_items = models.PositiveSmallIntegerField(
        default=5, help_text=_("Gold items a rater answers before their accuracy can pause them.")
    )
    gold_min_accuracy = models.FloatField(
        default=0.7, help_text=_("Raters whose gold accuracy falls below this are paused.")
    )
    approval_min_agreement = models.FloatField(
        default=0.8, help_text=_("Items whose raters agree at least this much are approved.")
    )
    max_overlap = models.PositiveSmallIntegerField(
        default=5, help_text=_("When raters disagree, add raters up to this many, then review.")
    )
    # Learning.
    embedding_text = models.CharField(
        max_length=16,
        choices=[
            ("pair", _("Prompt and reply apart")),
            ("last_reply", _("Last assistant reply")),
            ("prompt_reply", _("Prompt and reply")),
            ("conversation", _("Whole conversation")),
        ],
        default="pair",
        help_text=_("What of each conversation is embedded."),
    )
    learning_strategy = models.CharField(
        max_length=20,
        choices=[
            ("badge_alfamix", _("BADGE, ALFA-Mix from 40 labels, smallest margin from 150")),
            ("badge", _("Uncertain, typical and diverse (BADGE)")),
            ("entropy", _("Most uncertain first (entropy)")),
            ("hybrid", _("Uncertain and typical, spread over clusters")),
            ("margin", _("Smallest margin first")),
            ("least_confidence", _("Least confident first")),
            ("random", _("Random order")),
        ],
        # The order that saved the most labels against random on the shared sample sets: 26%
        # on average over 200 seeds, no set's mean worse than random's
        # (bench/learning/efficiency.py).
        default="badge_alfamix",
    )
    control_share = models.FloatField(
        default=0.1, help_text=_("Items always served at random: the honest test set.")
    )
    retrain_every = models.PositiveIntegerField(
        # Active learning pays off only if the model is retrained while the labels are few:
        # with 50 labels between runs random order reached the target as soon on the samples.
        default=10,
        help_text=_("Train again after this many new ratings (0: only on demand)."),
    )
    suggestions_enabled = models.BooleanField(
        default=False,
        help_text=_("Show raters the model's guess. Off by default: suggestions anchor raters."),
    )
    # Export.
    export_consent = models.CharField(
        max_length=16,
        choices=[
            ("opt_in", _("Only items whose source opted in")),
            ("opt_in_unknown", _("Opted-in items and items of unknown consent")),
        ],
        default="opt_in",
        help_text=_("Which items may leave the server. Opted-out items never do."),
    )
    # Explorer.
    duplicate_threshold = models.FloatField(
        default=0.97,
        help_text=_("Cosine similarity above which a new item is held as a near-duplicate."),
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(overlap__gte=1, overlap__lte=50), name="project_overlap_1_to_50"
            ),
            models.CheckConstraint(
                condition=Q(lease_ttl_seconds__gte=5), name="project_lease_ttl_at_least_5s"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0, gold_rate__lte=0.5),
                name="project_gold_rate_0_to_half",
            ),
            models.CheckConstraint(
                condition=Q(max_overlap__gte=F("overlap")), name="project_max_overlap_ge_overlap"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", _("Admin")
    REVIEWER = "reviewer", _("Reviewer")
    RATER = "rater", _("Rater")


class Membership(BaseModel):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.RATER)
    paused_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.TextField(blank=True)
    # {question: estimated accuracy}, from Dawid-Skene over the project's answers and gold.
    reliability = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # project_get_for_user: one role per person per project.
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class LabelSchema(BaseModel):
    """One published, immutable version of a project's questions."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="schemas")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True)
    definition = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["project", "-version"]
        constraints = [
            # schema_current and schema_publish: the latest version of a project.
            models.UniqueConstraint(
                fields=["project", "version"], name="labelschema_unique_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.version}"

    def save(self, *args, **kwargs) -> None:
        # Answers record the version they were given under; editing one in place would
        # silently change what those answers mean.
        assert self._state.adding, "A published schema version is immutable; publish a new one."
        super().save(*args, **kwargs)

    def parsed(self):
        """The parsed schema, kept per process: a version never changes once published."""
        from labelling.schema import parse_schema

        key = (self.pk, self.created_at)
        schema = _PARSED_SCHEMAS.get(key)
        if schema is None:
            if len(_PARSED_SCHEMAS) > 256:
                _PARSED_SCHEMAS.clear()
            schema = _PARSED_SCHEMAS[key] = parse_schema(self.definition)
        return schema


_PARSED_SCHEMAS: dict = {}


class Consent(models.TextChoices):
    OPT_IN = "opt_in", _("Opted in")
    OPT_OUT = "opt_out", _("Opted out")
    UNKNOWN = "unknown", _("Unknown")


class ItemStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    IN_PROGRESS = "in_progress", _("In progress")
    NEEDS_REVIEW = "needs_review", _("Needs review")
    APPROVED = "approved", _("Approved")
    REJECTED = "rejected", _("Rejected")


class Hold(models.TextChoices):
    NONE = "", _("In the queue")
    DUPLICATE = "duplicate", _("Near-duplicate")
    EXCLUDED = "excluded", _("Excluded")


class Tag(BaseModel):
    """A project's free label on items, set by hand or in bulk from the explorer."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="tag_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Item(BaseModel):
    """One conversation to label, or one prompt with two candidate replies (a pair item)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items")
    external_id = models.CharField(max_length=255)
    # [{"id": "t1", "role": "user", "content": "..."}, ...]; ids never change once stored.
    messages = models.JSONField()
    # [{"id": "a", "role": "assistant", "content": ...}, {"id": "b", ...}] for pair items.
    candidates = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=500, blank=True)
    license = models.CharField(max_length=100, blank=True)
    consent = models.CharField(max_length=16, choices=Consent.choices, default=Consent.UNKNOWN)
    language = models.CharField(max_length=35, blank=True)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    priority = models.FloatField(default=0.0)
    # Queue bookkeeping, changed only by conditional UPDATEs in services/assignments.py so that
    # PostgreSQL re-checks them on the row it locks: `ratings + leases < target` admits a lease.
    target = models.PositiveSmallIntegerField(default=1, help_text=_("Ratings this item needs."))
    ratings = models.PositiveSmallIntegerField(default=0)
    leases = models.PositiveSmallIntegerField(default=0)
    # Known answers: a gold item is mixed into queues unseen and scores its raters.
    gold = models.JSONField(null=True, blank=True)
    # {question: {"value", "distribution", "agreement", "n"}}, kept by services/quality.py.
    consensus = models.JSONField(default=dict, blank=True)
    agreement = models.FloatField(null=True, blank=True)
    # Consent withdrawn after import: the item never leaves again, snapshots holding it are marked.
    consent_withdrawn_at = models.DateTimeField(null=True, blank=True)
    # The latest model's guess per question {question: {"value", "probabilities"}}, written with
    # the priority by a training run; shown to raters only when the project turns it on.
    predictions = models.JSONField(default=dict, blank=True)
    # Kept out of the queue while set (near-duplicates, excluded items); "" when queued.
    hold = models.CharField(max_length=16, choices=Hold.choices, default="", blank=True)
    duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="duplicates"
    )
    duplicate_similarity = models.FloatField(null=True, blank=True)
    cluster = models.ForeignKey(
        "Cluster", null=True, blank=True, on_delete=models.SET_NULL, related_name="items"
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="items")

    class Meta:
        ordering = ["id"]
        constraints = [
            # items_import: idempotency lookup `external_id IN (...)` within one project.
            models.UniqueConstraint(
                fields=["project", "external_id"], name="item_unique_external_id"
            ),
            models.CheckConstraint(
                condition=Q(consent__in=Consent.values), name="item_consent_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ItemStatus.values), name="item_status_valid"
            ),
            models.CheckConstraint(condition=Q(hold__in=Hold.values), name="item_hold_valid"),
        ]
        indexes = [
            # assignment_next: open items of a project by priority, then import order. Partial,
            # so items with all their ratings or leases drop out of the scan.
            models.Index(
                fields=["project", "-priority", "id"],
                condition=Q(ratings__lt=F("target") - F("leases"), gold__isnull=True, hold=""),
                name="item_queue_open",
            ),
            # assignment_next's gold draw and the gold list: a project's gold items.
            models.Index(fields=["project"], condition=Q(gold__isnull=False), name="item_gold"),
            # The review queue and status filters.
            models.Index(fields=["project", "status"], name="item_by_status"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.external_id}"

    @property
    def is_pair(self) -> bool:
        return bool(self.candidates)

    def turns(self) -> list:
        """Messages then candidate replies, as the schema's answer validation sees them."""
        from labelling.schema import Turn

        return [Turn(m["id"], m["role"], m["content"]) for m in self.messages] + [
            Turn(c["id"], c["role"], c["content"]) for c in self.candidates or []
        ]


class ApiToken(BaseModel):
    """A key for scripts and pipelines. Only its SHA-256 is stored; the key is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=12, help_text=_("First characters, to tell keys apart."))
    key_hash = models.CharField(max_length=64, unique=True)
    projects = models.ManyToManyField(Project, related_name="api_tokens")
    can_write = models.BooleanField(default=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class LoginFailures(models.Model):
    """Failed sign-ins per account or client address in the current window (labelling/auth.py).

    Counted with conditional UPDATEs, so concurrent attempts from many processes all count.
    """

    key = models.CharField(max_length=200, unique=True)  # "user:<name>" or "ip:<address>"
    window_started_at = models.DateTimeField()
    failures = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.failures}"


class WorkerHeartbeat(models.Model):
    """Last time each background worker ran its heartbeat task, shown to admins."""

    hostname = models.CharField(max_length=255, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    SUBMITTED = "submitted", _("Submitted")
    SKIPPED = "skipped", _("Skipped")
    EXPIRED = "expired", _("Expired")
    RELEASED = "released", _("Released")  # the item got its ratings before this one came in


class Assignment(BaseModel):
    """A lease: one rater holds one item until `expires_at`."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    schema = models.ForeignKey(LabelSchema, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=16, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE
    )
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # A rater sees an item at most once; assignment_next's NOT EXISTS uses it too.
            models.UniqueConstraint(fields=["item", "rater"], name="assignment_unique_rater"),
            models.CheckConstraint(
                condition=Q(status__in=AssignmentStatus.values), name="assignment_status_valid"
            ),
        ]
        indexes = [
            # assignment_next: the rater's current lease in a project.
            models.Index(
                fields=["project", "rater"],
                condition=Q(status="active"),
                name="assignment_active_by_rater",
            ),
            # assignments_expire: active leases past their expiry.
            models.Index(
                fields=["expires_at"], condition=Q(status="active"), name="assignment_active_expiry"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rater} on item {self.item_id} ({self.status})"


class Annotation(BaseModel):
    """One rater's answers to one item under one schema version."""

    assignment = models.OneToOneField(
        Assignment, on_delete=models.CASCADE, related_name="annotation"
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotations")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations"
    )
    schema = models.ForeignKey(LabelSchema, on_delete=models.PROTECT, related_name="annotations")
    answers = models.JSONField()
    time_spent_ms = models.PositiveIntegerField()
    idempotency_key = models.CharField(max_length=100)

    class Meta:
        constraints = [
            # The overlap guarantee's last line: never two answers by one rater to one item.
            models.UniqueConstraint(fields=["item", "rater"], name="annotation_unique_rater"),
        ]
        indexes = [
            # Progress per rater and project ("my projects").
            models.Index(fields=["project", "rater"], name="annotation_by_rater"),
        ]

    def __str__(self) -> str:
        return f"{self.rater} on item {self.item_id}"


class ReviewAction(BaseModel):
    """An audited reviewer decision on an item."""

    class Action(models.TextChoices):
        APPROVE = "approve", _("Approve")
        CORRECT = "correct", _("Correct")
        REJECT = "reject", _("Reject")

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reviews")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    answers = models.JSONField(null=True, blank=True)  # the reviewer's final answers (correct)
    previous_status = models.CharField(max_length=16, choices=ItemStatus.choices)
    previous_consensus = models.JSONField(default=dict)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.action} item {self.item_id}"


class Embedding(models.Model):
    """An item's text as a vector of one encoder, so unchanged items are never embedded twice."""

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="embeddings")
    encoder = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64)
    # The conversation up to its last user turn (texts.prompt_hash): items sharing it answer
    # the same prompt, and the badge order may serve them side by side.
    prompt_hash = models.CharField(max_length=64, blank=True, default="")
    vector = models.BinaryField()  # float32, L2-normalised
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # items_embed: the one vector of an item per encoder, replaced when its text changes.
            models.UniqueConstraint(fields=["item", "encoder"], name="embedding_unique_encoder"),
        ]

    def __str__(self) -> str:
        return f"item {self.item_id} by {self.encoder}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    SKIPPED = "skipped", _("Skipped: nothing changed")
    FAILED = "failed", _("Failed")


class Run(BaseModel):
    """A piece of work a worker carries out for a project: claimed once (queued -> running), then
    finished with a status, a note and the time each step took. See services/runs.py."""

    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=16, default="manual")
    timings = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="%(class)s_status_valid"
            ),
            # run_request: at most one run waiting or running per project.
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(status__in=["queued", "running"]),
                name="%(class)s_one_open_per_project",
            ),
        ]


class TrainingRun(Run):
    """One training of a classifier per question, and the queue order it wrote. Triggers:
    manual, labels, beat."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    data_hash = models.CharField(max_length=64, blank=True)
    labels = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"run {self.pk} of {self.project} ({self.status})"


class ClusteringRun(Run):
    """One grouping of a project's items by their embeddings, with a 2-D map of a sample.
    Triggers: manual, import."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clustering_runs")
    encoder = models.CharField(max_length=200, blank=True)
    k = models.PositiveIntegerField(default=0)
    silhouette = models.FloatField(null=True, blank=True)
    items = models.PositiveIntegerField(default=0)
    # [{"item": id, "x": float, "y": float, "cluster": index}, ...] for a sample of items.
    projection = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"clustering {self.pk} of {self.project} ({self.status})"


class Cluster(models.Model):
    """A group of similar items of one clustering run, named by its most distinctive terms."""

    run = models.ForeignKey(ClusteringRun, on_delete=models.CASCADE, related_name="clusters")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="clusters")
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField(default=0)
    terms = models.JSONField(default=list, blank=True)  # ["term", ...], most distinctive first
    representatives = models.JSONField(default=list, blank=True)  # item ids nearest the centre
    label_distribution = models.JSONField(default=dict, blank=True)  # {question: {value: n}}
    x = models.FloatField(default=0.0)  # centre on the run's 2-D map
    y = models.FloatField(default=0.0)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="cluster_unique_index"),
        ]

    def __str__(self) -> str:
        return ", ".join(self.terms[:3]) or f"cluster {self.index}"


class Snapshot(BaseModel):
    """An immutable dataset: a filter's items and answers frozen, a content hash, a data card."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=200, blank=True)
    filters = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    content_hash = models.CharField(max_length=64, blank=True)
    card = models.JSONField(default=dict, blank=True)
    item_count = models.PositiveIntegerField(default=0)
    # Items whose consent was withdrawn after the snapshot froze them; left out of downloads.
    withdrawn_count = models.PositiveIntegerField(default=0)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="snapshot_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"snapshot {self.pk} of {self.project} ({self.status})"


class SnapshotItem(models.Model):
    """One frozen record of a snapshot, in its order. The item may change or go; this does not."""

    snapshot = models.ForeignKey(Snapshot, on_delete=models.CASCADE, related_name="records")
    item = models.ForeignKey(
        Item, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    position = models.PositiveIntegerField()
    record = models.JSONField()

    class Meta:
        ordering = ["snapshot", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "position"], name="snapshotitem_unique_position"
            ),
        ]
        indexes = [models.Index(fields=["item"], name="snapshotitem_by_item")]

    def __str__(self) -> str:
        return f"{self.snapshot_id}#{self.position}"
