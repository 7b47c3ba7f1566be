"""Sending requests to OpenAI, Azure OpenAI and ElevenLabs: retries and deadlines."""
