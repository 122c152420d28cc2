"""The REST API (v1): DRF views, serializers, filters and token authentication."""
