"""The model runner: tool-using chat over the hub's tools.

messages (transcript and request types) ← backends (OpenAI-compatible, Ollama) ← tools (what the model
may call, executed through the hub) ← loop (the bounded tool-use loop) ← api (the /v1 routes).
"""
