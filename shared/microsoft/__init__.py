"""The Microsoft adapter: Entra ID and Microsoft Graph.

Owns the Entra ID sign-in for the portal and for providers (``entra``), app-only Graph credentials
(``app_credentials``), Teams online meetings and Graph subscriptions (``teams``) with the event loop the
async-only Graph SDK runs on (``background_loop``), and change notifications: clientState, validation tokens
and batch decoding (``notifications``), decryption (``notification_crypto``) and call events to participant
changes (``call_events``). Imports ``kernel``, the other adapters and the value types of ``visits.events``;
never a domain service.
"""
