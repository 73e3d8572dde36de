"""The Space's request handling, kept apart from its page (app.py lays out the page and wires the events).

- limits: what one request may ask for (from environment variables) and the checks that enforce it
- folders: each request's own folder, kept while its job runs and for a while after, then removed
- jobs: the two endpoints' work (make_video, preview_speech), errors in the visitor's words
- examples: the example buttons, each made on its first click and kept for the process
- voices, form: the voice picker and the other form helpers the events call
"""
