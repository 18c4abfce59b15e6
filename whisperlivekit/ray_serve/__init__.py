"""Scale-out on Ray Serve (`wlk serve --ray`): see docs/scaling.md.

remote.py: what the WebSocket ingress runs (a policy that forwards to a model replica);
deployments.py: the Serve deployments, the session-pinning router, and `serve_on_ray`.
Importing this package does not import Ray.
"""
