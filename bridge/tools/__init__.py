"""Business tools a dialplan declares: what they are (:mod:`bridge.tools.spec`, pure), how the bridge calls them
(:mod:`bridge.tools.http`), and one call's set of them (:mod:`bridge.tools.runner`)."""
