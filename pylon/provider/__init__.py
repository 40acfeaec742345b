"""The provider's side (journey 2, serve): Provider, payment step, job store, backends."""
