"""The chat demo: a Starlette app whose simulated LLM replies survive reloads.

``python -m resumable_fast demo`` serves it (needs the ``demo`` extra). The page
streams each reply over Server-Sent Events from the resumable stream, so a
reload, a second tab or a dropped connection picks the reply up where it is.
"""

from resumable_fast.demo.llm import full_reply, simulated_reply

__all__ = ["full_reply", "simulated_reply"]
