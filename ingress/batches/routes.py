"""The routes of ``/v1/files`` and ``/v1/batches``."""

from __future__ import annotations

from starlette.routing import Route

from ingress.batches import batches_api, files_api
from ingress.batches.services import rate_limited


def batch_routes() -> list[Route]:
    return [
        Route("/v1/files", rate_limited(files_api.create_file), methods=["POST"]),
        Route("/v1/files", rate_limited(files_api.list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", rate_limited(files_api.retrieve_file), methods=["GET"]),
        Route("/v1/files/{file_id}", rate_limited(files_api.delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", rate_limited(files_api.file_content), methods=["GET"]),
        Route("/v1/batches", rate_limited(batches_api.create_batch), methods=["POST"]),
        Route("/v1/batches", rate_limited(batches_api.list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}", rate_limited(batches_api.retrieve_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", rate_limited(batches_api.cancel_batch), methods=["POST"]),
    ]
