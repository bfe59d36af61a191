"""Downstream: what clinicians and patients wrote at central, merged into the charts.

Clinician advice, referral answers, patient replies and reminder outcomes are Communications
at central (docs/fhir.md, "Naming"); a call-back a patient asked for (by replying CALL) is a
Task of kind ``call_back`` for the CHW. The fetcher follows one search per ``Feed``, each with
its own cursor: it asks for the resources updated since the cursor, less an overlap (central's
commit order and its ``lastUpdated`` order can differ a little), and adds each one to the
chart of its patient as a message or a task whose ID is the resource's ID: a resource fetched
twice, or one the hub pushed itself, is already in the chart and changes nothing. Charts are
read first and written only when something is new, each in a write transaction through
``store.put_chart``, so the change goes to the tablets that hold the chart (and is queued for
central too). A feed's cursor moves to the newest ``lastUpdated`` of a page in the transaction
that merged the page.

``fetcher`` follows the feeds; ``messages`` and ``tasks`` say what each resource becomes in a
chart; ``fhir`` reads the JSON.
"""

from sync_hub.downstream.fetcher import FEEDS, OVERLAP, Feed, Fetcher, FetchReport

__all__ = ["FEEDS", "OVERLAP", "Feed", "FetchReport", "Fetcher"]
