"""Lua scripts of the StreamManager, one ``.lua`` file each."""
