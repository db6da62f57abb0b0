"""Every page, fragment and image of the review app. Each area has its own view module:
views (datasets list, images), views_manage (dataset page, rounds, jobs, members),
views_review (queues, face cards, decisions), views_bulk (queue-wide decisions),
views_identities (identities, pairs, history, undo), views_team (team, second looks). The JSON
API lives under api/.

A view's name says its layer and its method: `…_page` answers a GET with a page or a fragment,
`…_file` with bytes (an image, a chart, a download), `…_post` takes a form's POST; the service
or selector it calls has the bare name (flag_decide_post calls services.flags.flag_decide)."""
from django.urls import include, path

from . import views, views_bulk, views_identities, views_manage, views_review, views_team

urlpatterns = [
    path("", views.dataset_list_page, name="dataset-list"),
    path("faces/<int:face_id>/image", views.face_image_file, name="face-image"),
    path("faces/<int:face_id>/thumbnail", views.face_thumbnail_file, name="face-thumbnail"),
    # Datasets, rounds, jobs, members (views_manage).
    path("datasets/import", views_manage.dataset_import_page, name="dataset-import"),
    path("datasets/<int:dataset_id>/", views_manage.dataset_page, name="dataset-detail"),
    path("datasets/<int:dataset_id>/live", views_manage.dataset_live_page, name="dataset-live"),
    path("datasets/<int:dataset_id>/members", views_manage.dataset_members_page, name="dataset-members"),
    path("datasets/<int:dataset_id>/rounds/start", views_manage.round_start_post, name="round-start"),
    path("datasets/<int:dataset_id>/exports/start", views_manage.export_start_post, name="export-start"),
    path("rounds/<int:round_id>/", views_manage.round_page, name="round-detail"),
    path("rounds/<int:round_id>/progress", views_manage.round_progress_page, name="round-progress"),
    path("rounds/<int:round_id>/cancel", views_manage.round_cancel_post, name="round-cancel"),
    path("rounds/<int:round_id>/charts/<slug:chart>.svg", views_manage.round_chart_file, name="round-chart"),
    path("jobs/<int:job_id>/", views_manage.job_page, name="job-detail"),
    path("jobs/<int:job_id>/download", views_manage.job_download_file, name="job-download"),
    # Review queues, face cards and flag decisions (views_review).
    path("datasets/<int:dataset_id>/review/<slug:kind>/", views_review.review_queue_page, name="review-queue"),
    path("datasets/<int:dataset_id>/review/<slug:kind>/claim", views_review.review_claim_post, name="review-claim"),
    path("datasets/<int:dataset_id>/flags/bulk", views_review.flags_bulk_post, name="flags-bulk"),
    path("flags/<int:flag_id>/", views_review.flag_card_page, name="flag-card"),
    path("flags/<int:flag_id>/decide", views_review.flag_decide_post, name="flag-decide"),
    # Queue-wide bulk decisions: filter and preview, start, the job (views_bulk).
    path("datasets/<int:dataset_id>/bulk/", views_bulk.bulk_page, name="bulk-form"),
    path("datasets/<int:dataset_id>/bulk/start", views_bulk.bulk_start_post, name="bulk-start"),
    path("datasets/<int:dataset_id>/bulk/jobs/<int:job_id>/", views_bulk.bulk_job_page, name="bulk-job"),
    # Identities, duplicate pairs, history and undo (views_identities).
    path("datasets/<int:dataset_id>/identities/", views_identities.identity_list_page, name="identity-list"),
    path("datasets/<int:dataset_id>/identities/search", views_identities.identity_search_page, name="identity-search"),
    path("datasets/<int:dataset_id>/faces/find", views_identities.face_find_page, name="face-find"),
    path("datasets/<int:dataset_id>/batches/<uuid:batch>/undo", views_identities.batch_undo_post, name="batch-undo"),
    path("datasets/<int:dataset_id>/history", views_identities.decision_history_page, name="history"),
    path("identities/<int:identity_id>/", views_identities.identity_detail_page, name="identity-detail"),
    path("identities/<int:identity_id>/bulk", views_identities.identity_bulk_post, name="identity-bulk"),
    path("identities/<int:identity_id>/merge", views_identities.identity_merge_post, name="identity-merge"),
    path("identities/<int:identity_a>/vs/<int:identity_b>/", views_identities.pair_detail_page, name="pair-detail"),
    path("decisions/<int:decision_id>/undo", views_identities.decision_undo_post, name="decision-undo"),
    # The team view: holds, throughput, claims mode, double review (views_team).
    path("datasets/<int:dataset_id>/team", views_team.team_page, name="team-page"),
    path("datasets/<int:dataset_id>/team/claims", views_team.team_claims_post, name="team-claims"),
    path("datasets/<int:dataset_id>/team/double-review", views_team.team_share_post, name="team-share"),
    path("datasets/<int:dataset_id>/second-look/", views_team.second_look_page, name="second-look"),
    path("datasets/<int:dataset_id>/second-look/<int:review_id>/answer", views_team.second_look_answer_post,
         name="second-look-answer"),
    path("datasets/<int:dataset_id>/disagreements/", views_team.disagreement_list_page, name="disagreements"),
    path("datasets/<int:dataset_id>/disagreements/<int:review_id>/resolve", views_team.disagreement_resolve_post,
         name="disagreement-resolve"),
    path("api/", include("reviewapp.api.urls")),
]
