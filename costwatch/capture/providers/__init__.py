"""What costwatch knows about each provider, one module per provider.

Each module holds everything about one provider's API: its SDK usage reader, its JSON (dict)
usage reader, its token partition (how its counts map onto ``TokenUsage``'s ``token_type``
partition) and its stream state (how usage arrives in its streamed chunks or events).  The
decorators, ``instrument()`` and the stream watcher all call these; none has a copy of its own.
"""
