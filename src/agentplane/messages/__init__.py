"""Agent-to-agent messages on PostgreSQL: direct, to a topic or broadcast; leased to one
receiver at a time, acked or retried, expired by their time to live, dead after their
retries (AutoSDLC's agent_messages and message_queue)."""
