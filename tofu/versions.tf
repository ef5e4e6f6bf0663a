# OpenTofu and provider versions. `tofu init` writes .terraform.lock.hcl: commit it.
terraform {
  required_version = ">= 1.8.0"

  required_providers {
    cloudflare = {
      source  = "cloudflare/cloudflare"
      version = "~> 5.10"
    }
  }
}

# The token comes from TF_VAR_cloudflare_api_token (or CLOUDFLARE_API_TOKEN when the variable is
# left null); never from a file in this repository.
provider "cloudflare" {
  api_token = var.cloudflare_api_token
}
