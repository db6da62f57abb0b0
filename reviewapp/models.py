"""FaceClean's data model.

Labels change only through `reviewapp.services`, which write a Decision row in the same
transaction; Decision rows are never updated or deleted.
"""
from django.conf import settings
from django.db import models


class Dataset(models.Model):
    class Claims(models.TextChoices):
        # Others' queues skip a held flag, but anyone who opens it may still decide it.
        ADVISORY = "advisory"
        # Only the holder may decide a held flag until the claim expires or is given back.
        ENFORCED = "enforced"

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claims = models.CharField(max_length=8, choices=Claims.choices, default=Claims.ADVISORY)
    # The share of decided flags asked again, blind, of another reviewer (0 = off, at most 0.5).
    double_review_share = models.FloatField(default=0.0)

    def __str__(self):
        return self.name


class Membership(models.Model):
    """Who may see a dataset, and as what. Staff users may see every dataset as admins."""

    class Role(models.TextChoices):
        REVIEWER = "reviewer"
        ADMIN = "admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.REVIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "dataset"], name="membership_unique_user_dataset")
        ]


class Source(models.Model):
    """One imported origin of faces: a folder, a file list or a RecordIO file.
    A dataset built from MS-Celeb-1M plus VGGFace2 has two sources."""

    class Format(models.TextChoices):
        FOLDER = "folder"
        LIST = "list"
        RECORDIO = "recordio"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="sources")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=16, choices=Format.choices)
    # Absolute, resolved directory that face paths are relative to; for RecordIO the .rec file.
    root = models.TextField()
    record_file = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "name"], name="source_unique_name")]

    def __str__(self):
        return f"{self.dataset.name}/{self.name}"


class Identity(models.Model):
    # Covered by identity_dataset_name and the unique (source, name) constraint.
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="identities", db_index=False)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="identities", db_index=False)
    # The name exactly as found in the data: untrusted text, always escaped on output.
    name = models.TextField()
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="merged_from"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "name"], name="identity_unique_name_per_source")
        ]
        indexes = [models.Index(fields=["dataset", "name"], name="identity_dataset_name")]

    def __str__(self):
        return self.name


class Face(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        REMOVED = "removed"

    # The single-column FK indexes are left out: face_dataset_status, face_unique_path and
    # face_identity lead with these columns, and every index costs ~2 s per million imported rows.
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="faces", db_index=False)
    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="faces", db_index=False)
    # Relative to source.root for files; for RecordIO "rec:<key>" with the byte offset below.
    path = models.TextField()
    record_offset = models.BigIntegerField(null=True, blank=True)
    original_identity = models.ForeignKey(Identity, on_delete=models.PROTECT, related_name="+")
    identity = models.ForeignKey(Identity, on_delete=models.PROTECT, related_name="faces", db_index=False)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    size = models.BigIntegerField(help_text="bytes of the encoded image")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "path"], name="face_unique_path")]
        indexes = [
            models.Index(fields=["identity", "id"], name="face_identity"),
            models.Index(fields=["dataset", "status", "id"], name="face_dataset_status"),
        ]


class Round(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        TRAINING = "training"
        EXTRACTING = "extracting"
        MINING = "mining"
        PUBLISHED = "published"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Method(models.TextChoices):
        ARCFACE = "arcface"
        SUBCENTER = "subcenter"
        ROBUSTFACE = "robustface"
        COMINING = "comining"
        EMBEDDINGS = "embeddings", "user-supplied embeddings"
        # dlib's ResNet descriptor (ml/pretrained.py): no training, a model that never saw the labels.
        PRETRAINED = "pretrained", "pretrained dlib descriptor"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="rounds")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    method = models.CharField(max_length=12, choices=Method.choices)
    config = models.JSONField(default=dict, blank=True)
    # stage, percent, samples_per_s, eta_s: written by the worker while it runs.
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # What the round page charts, written once when the round publishes: flags per kind,
    # the feature-norm histogram and a sample of (theta_y, theta_1) points per sample class.
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="round_unique_number"),
            # One round at a time per dataset: it trains on the labels as they are.
            models.UniqueConstraint(
                fields=["dataset"],
                condition=models.Q(status__in=["queued", "training", "extracting", "mining"]),
                name="round_one_active_per_dataset",
            ),
        ]

    def __str__(self):
        return f"{self.dataset.name} round {self.number}"

    @property
    def first_stage(self) -> str:
        """Where work starts: user-supplied embeddings need neither training nor extraction, a
        pretrained model no training."""
        if self.method == self.Method.EMBEDDINGS:
            return self.Status.MINING
        return self.Status.EXTRACTING if self.method == self.Method.PRETRAINED else self.Status.TRAINING


class Flag(models.Model):
    class Kind(models.TextChoices):
        NOISY = "noisy"
        HARD = "hard"
        LOW_NORM = "low_norm"
        DUPLICATE_IDENTITY = "duplicate_identity"
        NEAR_DUPLICATE = "near_duplicate"

    class Suggestion(models.TextChoices):
        REMOVE = "remove"
        RELABEL = "relabel"
        MERGE = "merge"
        KEEP = "keep"

    class State(models.TextChoices):
        OPEN = "open"
        CONFIRMED = "confirmed"
        REJECTED = "rejected"
        OVERRIDDEN = "overridden", "decided otherwise"
        # Left unanswered until a later round asked about the same subject again; that round's
        # flag is the one to answer (see superseded_by). Nobody decided it: not an answer.
        SUPERSEDED = "superseded", "superseded by a later round"

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="flags")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # A face flag names `face` (and `other_face` for near-duplicates); an identity flag
    # names the pair identity_a / identity_b.
    face = models.ForeignKey(Face, null=True, blank=True, on_delete=models.CASCADE, related_name="flags")
    other_face = models.ForeignKey(
        Face, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    identity_a = models.ForeignKey(
        Identity, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    identity_b = models.ForeignKey(
        Identity, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    score = models.FloatField()
    evidence = models.JSONField(default=dict, blank=True)
    suggestion = models.CharField(max_length=8, choices=Suggestion.choices)
    suggested_identity = models.ForeignKey(
        Identity, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    # The round whose publishing superseded this open flag (state "superseded"): the flag's audit.
    superseded_by = models.ForeignKey(
        Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="superseded_flags"
    )
    # A reviewer who took this flag in a batch; others skip it until the claim expires.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The review queue: flags of kind K in round R, highest score first (keyset on id).
            models.Index(fields=["round", "kind", "-score", "-id"], name="flag_queue"),
            # The same, over open flags only: what a reviewer works through.
            models.Index(
                fields=["round", "kind", "-score", "-id"], name="flag_open_queue",
                condition=models.Q(state="open"),
            ),
            models.Index(fields=["face"], name="flag_face"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(face__isnull=False)
                | models.Q(identity_a__isnull=False, identity_b__isnull=False),
                name="flag_has_subject",
            )
        ]


class Job(models.Model):
    """A background job started from the browser (import, export): its state, and for an
    export the file to download. The file is found from the job id, never from a request."""

    class Kind(models.TextChoices):
        IMPORT = "import"
        EXPORT = "export"
        # One decision applied to every open flag a filter matches (services.bulk).
        BULK_DECIDE = "bulk_decide", "queue-wide decision"
        # Every decision of one batch undone (services.undo).
        BATCH_UNDO = "batch_undo", "batch undo"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    # An import creates its dataset: the job names it once it exists.
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    # For exports: the file's name relative to settings.EXPORT_ROOT.
    file = models.CharField(max_length=300, blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["dataset", "-id"], name="job_dataset")]


class DecisionQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Decision rows are append-only")

    def delete(self):
        raise TypeError("Decision rows are append-only")


class Decision(models.Model):
    """The audit trail: one row for every change, never changed itself."""

    class Action(models.TextChoices):
        IMPORT = "import"
        REMOVE = "remove"
        RESTORE = "restore"
        RELABEL = "relabel"
        MERGE = "merge"
        KEEP = "keep"
        LOW_QUALITY = "low_quality", "Low quality"
        UNDO = "undo"
        ROLE = "role", "Role change"  # a membership added, changed or removed: before/after {"member", "role"}
        # A dataset setting changed (claims mode, double-review share): before/after {"setting", "value"}.
        SETTING = "setting", "Setting change"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="decisions")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    # Who, as text, so that command-line changes (no user) still say who made them.
    actor = models.CharField(max_length=150)
    round = models.ForeignKey(Round, null=True, blank=True, on_delete=models.PROTECT)
    flag = models.ForeignKey(Flag, null=True, blank=True, on_delete=models.PROTECT)
    action = models.CharField(max_length=12, choices=Action.choices)
    face = models.ForeignKey(Face, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    identity = models.ForeignKey(
        Identity, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    # A copy of the flag's evidence as it stood when the decision was taken.
    evidence = models.JSONField(default=dict, blank=True)
    # Decisions taken together (a page's or a queue-wide bulk action) share a batch id, so
    # that they can be found and undone as one.
    batch = models.UUIDField(null=True, blank=True)
    # On an "undo" row: the decision it undid (also in after["undoes"], kept for old readers).
    undoes = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="undone_by")

    objects = DecisionQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["dataset", "-id"], name="decision_dataset"),
            # The history page's filters by reviewer and by action.
            models.Index(fields=["dataset", "user", "-id"], name="decision_dataset_user"),
            models.Index(fields=["dataset", "action", "-id"], name="decision_dataset_action"),
            models.Index(fields=["dataset", "batch"], name="decision_batch", condition=models.Q(batch__isnull=False)),
        ]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Decision rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Decision rows are append-only")


class SecondReview(models.Model):
    """A decided flag asked again, blind, of another reviewer (services.double_review).

    Answers are verdicts: what the answer would do to the data ("keep", "remove",
    "low_quality", "relabel:<identity id>", "merge", and for a near-duplicate pair
    "remove:<face id>" / "low_quality:<face id>"), so that two answers compare by their effect.
    The second answer changes no data, so it is recorded here and not as a Decision row.
    """

    class State(models.TextChoices):
        PENDING = "pending", "waiting for a second answer"
        AGREED = "agreed"
        DISAGREED = "disagreed"
        RESOLVED = "resolved", "disagreement resolved"

    class Resolution(models.TextChoices):
        KEPT_FIRST = "kept_first", "kept the first decision"
        APPLIED_SECOND = "applied_second", "applied the second answer"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="second_reviews", db_index=False)
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="second_reviews")
    # Decision rows go only with their dataset, and this row with them.
    first_decision = models.OneToOneField(Decision, on_delete=models.CASCADE, related_name="second_review")
    first_reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                       related_name="+")
    first_answer = models.CharField(max_length=40)
    # Who answered second (null until answered) and what.
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    answer = models.CharField(max_length=40, blank=True, default="")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True, default="")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    sampled_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The second-look queue and the disagreement queue: a dataset's items in one state.
            models.Index(fields=["dataset", "state", "id"], name="second_review_queue"),
        ]
