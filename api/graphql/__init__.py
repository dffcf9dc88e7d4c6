"""The GraphQL schema that ``POST /graphql`` (:mod:`api.routes.graphql`) runs: types, the query
and the mutations, each field checking its own scope."""
