"""The API's routes, one module per resource; each is an APIRouter mounted under /api/v1 by api.app."""
