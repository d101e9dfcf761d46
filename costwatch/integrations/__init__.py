"""Integrations with the frameworks LLM applications are built on.

Each module imports its framework and is imported only by the user (``import costwatch``
imports none of them): ``costwatch.integrations.langchain``, ``.llamaindex``, ``.litellm``.
"""
