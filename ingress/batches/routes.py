"""The routes of ``/v1/files`` and ``/v1/batches``."""

from __future__ import annotations

from starlette.routing import Route

from ingress.batches import batches_api, files_api


def batch_routes() -> list[Route]:
    return [
        Route("/v1/files", files_api.create_file, methods=["POST"]),
        Route("/v1/files", files_api.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", files_api.retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", files_api.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", files_api.file_content, methods=["GET"]),
        Route("/v1/batches", batches_api.create_batch, methods=["POST"]),
        Route("/v1/batches", batches_api.list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batches_api.retrieve_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batches_api.cancel_batch, methods=["POST"]),
    ]
