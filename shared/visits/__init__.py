"""Visits: one per appointment, for the day of the visit.

Owns the event model carried on the writeback queue (``events``), the visit row and its pure
transitions — meeting, presence, subscription — (``model``), its storage (``repository``), presence
writes queued per visit (``presence``), the signed links that let a browser re-enter a visit
(``tokens``) and the Graph subscription that watches the meeting (``subscriptions``). Entered by
launches, the Graph notification webhook and the writeback queue. Imports ``kernel`` and adapters.
"""
