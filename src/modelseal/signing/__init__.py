"""Keys, DSSE envelopes and sigstore bundles: how a manifest becomes a signed seal."""
