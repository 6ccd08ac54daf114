"""The HTTP side of AIOrouter: a Starlette app under uvicorn that never calls a provider.

``app.create_app(settings)`` builds it; ``server.run(settings, host=, port=)`` serves it.  Its lifespan
opens one Redis client (the request path's commands share one auto-pipelined connection), the process'
``reply_hub``, the ``open_set`` cache of open breakers, and the background loops (``watchdog``, the
sweep of expired credit holds in ``admission``; ``background`` stops them within a bound), and hands
them to handlers as one ``context``.

One completion: ``middleware`` (X-Request-Id, API-Version via ``versions``) → ``completions``: ``auth``
(keys from ``api_keys``), ``validation`` (with ``provider_preferences``), ``routing`` (open breakers
skipped without a round trip, from ``open_set``), ``admission`` (rate limit and credit hold in one round
trip) → ``fallback`` over the chosen deployments, each attempt a ``relay`` (enqueue through
``job_control``, frames from ``reply_hub``, dead workers caught by ``watchdog``) → the client.
``catalog`` serves /v1/models, ``health`` the probes, ``http_errors`` turns every error into the OpenAI
envelope.

``control/`` is the control plane, off the request path: ``control.admin`` (the ``/admin`` API for
operators), ``control.dashboard`` (the Dashboard page and the account-scoped API it calls) and
``control.accounts`` (accounts, their API keys and dashboard tokens).
"""
