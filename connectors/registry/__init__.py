"""The registry: tenants, directory, tenant policy and authorized tool invocation."""
