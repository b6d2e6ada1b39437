"""The wire layer: TC3 signatures, parameter parsing and validation, routing, response shaping."""
