from django.urls import path

from . import views

urlpatterns = [
    path("", views.dataset_list, name="dataset-list"),
    path("faces/<int:face_id>/image", views.face_image, name="face-image"),
    path("faces/<int:face_id>/thumbnail", views.face_thumbnail, name="face-thumbnail"),
]
