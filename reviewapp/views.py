"""Image views: bytes are found from the face id alone; nothing in a request names a path."""
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from .access import access_face
from .services.images import face_image_bytes, face_thumbnail_bytes

_CACHE = "private, max-age=86400"


@require_GET
def face_image(request, face_id: int):
    face = access_face(request.user, face_id)
    data, content_type = face_image_bytes(face=face)
    response = HttpResponse(data, content_type=content_type)
    response["Cache-Control"] = _CACHE
    return response


@require_GET
def face_thumbnail(request, face_id: int):
    face = access_face(request.user, face_id)
    response = HttpResponse(face_thumbnail_bytes(face=face), content_type="image/jpeg")
    response["Cache-Control"] = _CACHE
    return response
