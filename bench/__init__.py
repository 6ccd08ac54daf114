"""Benchmark tools: a simulated OpenAI-compatible upstream, a load generator and the scenario runner."""
