"""Every page, fragment and image of the review app. Each area has its own view module:
views (datasets list, images), views_manage (dataset page, rounds, jobs, members),
views_review (queues, face cards, decisions), views_identities (identities, pairs,
history, undo). The JSON API lives under api/."""
from django.urls import include, path

from . import views, views_bulk, views_identities, views_manage, views_review, views_team

urlpatterns = [
    path("", views.dataset_list, name="dataset-list"),
    path("faces/<int:face_id>/image", views.face_image, name="face-image"),
    path("faces/<int:face_id>/thumbnail", views.face_thumbnail, name="face-thumbnail"),
    # Datasets, rounds, jobs, members (views_manage).
    path("datasets/import", views_manage.dataset_import, name="dataset-import"),
    path("datasets/<int:dataset_id>/", views_manage.dataset_detail, name="dataset-detail"),
    path("datasets/<int:dataset_id>/live", views_manage.dataset_live, name="dataset-live"),
    path("datasets/<int:dataset_id>/members", views_manage.dataset_members, name="dataset-members"),
    path("datasets/<int:dataset_id>/rounds/start", views_manage.round_start, name="round-start"),
    path("datasets/<int:dataset_id>/exports/start", views_manage.export_start, name="export-start"),
    path("rounds/<int:round_id>/", views_manage.round_detail, name="round-detail"),
    path("rounds/<int:round_id>/progress", views_manage.round_progress, name="round-progress"),
    path("rounds/<int:round_id>/cancel", views_manage.round_cancel, name="round-cancel"),
    path("rounds/<int:round_id>/charts/<slug:chart>.svg", views_manage.round_chart, name="round-chart"),
    path("jobs/<int:job_id>/", views_manage.job_detail, name="job-detail"),
    path("jobs/<int:job_id>/download", views_manage.job_download, name="job-download"),
    # Review queues, face cards and flag decisions (views_review).
    path("datasets/<int:dataset_id>/review/<slug:kind>/", views_review.review_queue, name="review-queue"),
    path("datasets/<int:dataset_id>/review/<slug:kind>/claim", views_review.review_claim, name="review-claim"),
    path("datasets/<int:dataset_id>/flags/bulk", views_review.flags_bulk, name="flags-bulk"),
    path("flags/<int:flag_id>/", views_review.flag_card, name="flag-card"),
    path("flags/<int:flag_id>/decide", views_review.flag_decide, name="flag-decide"),
    # Queue-wide bulk decisions: filter and preview, start, the job (views_bulk).
    path("datasets/<int:dataset_id>/bulk/", views_bulk.bulk_page, name="bulk-form"),
    path("datasets/<int:dataset_id>/bulk/start", views_bulk.bulk_start, name="bulk-start"),
    path("datasets/<int:dataset_id>/bulk/jobs/<int:job_id>/", views_bulk.bulk_job, name="bulk-job"),
    # Identities, duplicate pairs, history and undo (views_identities).
    path("datasets/<int:dataset_id>/identities/", views_identities.identity_list, name="identity-list"),
    path("datasets/<int:dataset_id>/identities/search", views_identities.identity_search, name="identity-search"),
    path("datasets/<int:dataset_id>/faces/find", views_identities.face_find, name="face-find"),
    path("datasets/<int:dataset_id>/batches/<uuid:batch>/undo", views_identities.batch_undo, name="batch-undo"),
    path("datasets/<int:dataset_id>/history", views_identities.history, name="history"),
    path("identities/<int:identity_id>/", views_identities.identity_detail, name="identity-detail"),
    path("identities/<int:identity_id>/bulk", views_identities.identity_bulk, name="identity-bulk"),
    path("identities/<int:identity_id>/merge", views_identities.identity_merge, name="identity-merge"),
    path("identities/<int:identity_a>/vs/<int:identity_b>/", views_identities.pair_detail, name="pair-detail"),
    path("decisions/<int:decision_id>/undo", views_identities.decision_undo, name="decision-undo"),
    # The team view: holds, throughput, claims mode, double review (views_team).
    path("datasets/<int:dataset_id>/team", views_team.team_page, name="team-page"),
    path("datasets/<int:dataset_id>/team/claims", views_team.team_claims, name="team-claims"),
    path("datasets/<int:dataset_id>/team/double-review", views_team.team_share, name="team-share"),
    path("datasets/<int:dataset_id>/second-look/", views_team.second_look_page, name="second-look"),
    path("datasets/<int:dataset_id>/second-look/<int:review_id>/answer", views_team.second_look_answer,
         name="second-look-answer"),
    path("datasets/<int:dataset_id>/disagreements/", views_team.disagreement_list, name="disagreements"),
    path("datasets/<int:dataset_id>/disagreements/<int:review_id>/resolve", views_team.disagreement_resolve,
         name="disagreement-resolve"),
    path("api/", include("reviewapp.api.urls")),
]
