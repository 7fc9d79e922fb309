"""Fakes shared by the tests, each a first-class peer of the real part it stands in for: phone legs that drive the
real call session through the ``PhoneLeg`` interface (:mod:`fakes.leg`), a model session with no socket
(:mod:`fakes.session`), Kamailio's control socket (:mod:`fakes.kamailio`), and a clock the test sets
(:mod:`fakes.clock`)."""
