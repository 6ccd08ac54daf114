"""The HTTP side of AIOrouter: a thin Starlette app under uvicorn that never calls a provider.

``app.create_app(settings)`` builds it; ``server.run(settings, host=, port=)`` serves it.  One request:
``middleware`` (X-Request-Id, API-Version via ``versions``) → ``completions`` (``auth``, ``validation``,
``routing``) → ``relay`` (enqueue through ``job_control``, frames from the process-wide ``reply_hub``,
dead workers caught by ``watchdog``) → the client.  ``catalog`` serves /v1/models, ``health`` the probes,
``http_errors`` turns every error into the OpenAI envelope.
"""
