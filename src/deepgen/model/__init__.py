"""Model parts: VLM, Stacked Channel Bridging, SD3 MMDiT, VAE, flow matching; one file per part."""
