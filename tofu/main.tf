# Cloudflare DNS for the nodes and services, and the R2 buckets for Velero and etcd snapshots.
#   tofu plan
#   tofu apply
#   tofu apply -target=module.cloudflare-dns

module "cloudflare-dns" {
  source = "./modules/cloudflare-dns"

  zone_id  = var.cloudflare_zone_id
  domain   = var.domain
  nodes    = var.nodes
  services = var.services
  ttl      = var.dns_ttl
}

module "r2" {
  source = "./modules/r2"

  account_id                   = var.cloudflare_account_id
  location                     = var.r2_location
  velero_bucket                = var.velero_bucket
  etcd_bucket                  = var.etcd_bucket
  etcd_snapshot_retention_days = var.etcd_snapshot_retention_days
  velero_expire_days           = var.velero_expire_days
  multipart_abort_days         = var.multipart_abort_days
}
