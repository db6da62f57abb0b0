"""The JSON API (DRF) and its OpenAPI schema."""
urlpatterns = []
