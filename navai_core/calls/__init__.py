"""Server-controlled calls and phone calls: the signalling, the sideband's tool loop, the
call manager, SIP verdicts and OpenAI's signed webhooks."""
