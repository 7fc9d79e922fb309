"""Business tools a dialplan declares: what they are (:mod:`bridge.tools.spec`, pure), how the bridge calls them
(:mod:`bridge.tools.http`, :mod:`bridge.tools.mcp`), what their servers get to authorize a call and what the model
cannot reach (:mod:`bridge.tools.context`: the signed call context; :mod:`bridge.tools.guard`: pins and verification
first, pure), and one call's set of them (:mod:`bridge.tools.runner`)."""
