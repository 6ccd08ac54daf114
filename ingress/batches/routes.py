"""The routes of ``/v1/files`` and ``/v1/batches``."""

from __future__ import annotations

from starlette.routing import Route

from ingress.batches import batches_api, files_api
from ingress.batches.services import rate_limited
from ingress.route_table import route_table


def batch_routes() -> list[Route]:
    return route_table(
        [
            ("/v1/files", rate_limited(files_api.create_file), "POST"),
            ("/v1/files", rate_limited(files_api.list_files), "GET"),
            ("/v1/files/{file_id}", rate_limited(files_api.retrieve_file), "GET"),
            ("/v1/files/{file_id}", rate_limited(files_api.delete_file), "DELETE"),
            ("/v1/files/{file_id}/content", rate_limited(files_api.file_content), "GET"),
            ("/v1/batches", rate_limited(batches_api.create_batch), "POST"),
            ("/v1/batches", rate_limited(batches_api.list_batches), "GET"),
            ("/v1/batches/{batch_id}", rate_limited(batches_api.retrieve_batch), "GET"),
            ("/v1/batches/{batch_id}/cancel", rate_limited(batches_api.cancel_batch), "POST"),
        ]
    )
