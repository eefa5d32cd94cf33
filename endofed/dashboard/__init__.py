"""The run dashboard: a small web app that shows what a federation's server wrote, for a finished or a live run.

``endofed dashboard --run RUN_DIR`` serves it. :mod:`.view` turns the run folder's files (``rounds.jsonl``,
``summary.json``, ``server_state.json``, ``launch.json``, the SuperLink's database, passports) into a view model
with pure functions; :mod:`.plots` draws its curves as SVG (no CDN); :mod:`.app` is the FastAPI app around them.
Nothing it shows is a path inside a site or a subject id: free text is cut and path-like words are redacted.
"""
