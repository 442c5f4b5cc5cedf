"""Visits: one per appointment, for the day of the visit.

Owns the event model carried on the writeback queue (``events``), the visit row and its pure
transitions — meeting, presence, subscription, writeback claims — (``model``), its storage
(``repository``), the signed links that let a browser re-enter a visit (``tokens``) and the Graph
subscription that watches the meeting (``subscriptions``). Entered by launches, the Graph
notification webhook and the writeback queue. Imports ``kernel`` and adapters.
"""
