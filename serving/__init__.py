"""Online scoring (BentoML service, request/response schemas, model loading, online features) and batch scoring."""
