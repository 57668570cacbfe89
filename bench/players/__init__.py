"""bench/players: heartbeats paced like real players, open loop, Redis time per heartbeat (make bench-players)."""
