"""What ``aiorouter dev`` prints once the system is ready: the key, curl lines and an SDK snippet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DevSystem:
    base_url: str  # http://127.0.0.1:PORT/v1
    dashboard_url: str
    dashboard_token: str  # signs in as the dev account
    admin_token: str  # signs in as the operator (and guards /admin)
    secret: str
    key_id: str
    account_id: str
    credit_usd: str  # available credit of the account, in USD
    model: str
    redis: str  # which Redis, and why
    pools: tuple[str, ...]
    workers_per_pool: int
    concurrency: int


def banner(system: DevSystem) -> str:
    auth = f'-H "Authorization: Bearer {system.secret}" -H "Content-Type: application/json"'
    message = '[{"role": "user", "content": "Hello!"}]'
    pools = ", ".join(system.pools)
    return f"""
AIOrouter is running.

  API        {system.base_url}
  Redis      {system.redis}
  Workers    {system.workers_per_pool} process(es) per pool ({pools}), {system.concurrency} jobs each
  Dev key    {system.secret}
             (id {system.key_id}, account {system.account_id}; revoke: aiorouter keys revoke {system.key_id})
  Credit     USD {system.credit_usd} of play money on account {system.account_id}
  Dashboard  {system.dashboard_url}
             account {system.account_id}: sign in with {system.dashboard_token}
             operator:    sign in with the admin token {system.admin_token}

Non-streaming:

  curl -sS {system.base_url}/chat/completions {auth} \\
    -d '{{"model": "{system.model}", "messages": {message}}}'

Streaming:

  curl -sSN {system.base_url}/chat/completions {auth} \\
    -d '{{"model": "{system.model}", "stream": true, "messages": {message}}}'

OpenAI SDK (pip install openai):

  from openai import OpenAI

  client = OpenAI(base_url="{system.base_url}", api_key="{system.secret}")
  reply = client.chat.completions.create(model="{system.model}", messages={message})
  print(reply.choices[0].message.content)
  for chunk in client.chat.completions.create(model="{system.model}", messages={message}, stream=True):
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Press Ctrl-C to stop everything.
"""
