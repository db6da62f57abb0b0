"""Pages and image views. Views validate, call one selector or service, and render.
Image bytes are found from the face id alone: nothing in a request names a path."""
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .access import access_face
from .selectors import dataset_list
from .selectors.manage import can_import
from .services.images import face_image_bytes, face_thumbnail_bytes

_IMAGE_CACHE = "private, max-age=86400"


@require_GET
def dataset_list_page(request):
    return render(request, "datasets.html", {"datasets": dataset_list(user=request.user),
                                             "can_import": can_import(request.user)})


@require_GET
def face_image_file(request, face_id: int):
    face = access_face(request.user, face_id)
    data, content_type = face_image_bytes(face=face)
    response = HttpResponse(data, content_type=content_type)
    response["Cache-Control"] = _IMAGE_CACHE
    return response


@require_GET
def face_thumbnail_file(request, face_id: int):
    face = access_face(request.user, face_id)
    response = HttpResponse(face_thumbnail_bytes(face=face), content_type="image/jpeg")
    response["Cache-Control"] = _IMAGE_CACHE
    return response
