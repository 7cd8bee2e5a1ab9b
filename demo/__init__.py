"""`closeloop demo`: a plausible salon chain's last days played through the services' HTTP APIs
on the demo clock, so that a newcomer has a living chain to look at (README: "A chain to look at").
run.py plays, chain.py is the chain and its traffic, work.py its staff at work, texts.py what they
write, api.py the calls, clock.py the demo's hand on the demo clock."""
