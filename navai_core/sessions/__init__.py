"""What navai asks OpenAI for: the voice session, the client-secret mint, session templates
and ElevenLabs speech."""
