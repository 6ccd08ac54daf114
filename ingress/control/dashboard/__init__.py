"""The Dashboard: a page served by the ingress (static HTML, JS and CSS in this package, no build step)
and the account-scoped API it calls (:mod:`ingress.control.dashboard.routes`)."""
