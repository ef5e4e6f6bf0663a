# -- credentials: from the environment only (TF_VAR_cloudflare_api_token) --------------------
variable "cloudflare_api_token" {
  description = "Cloudflare API token (DNS edit on the zone, R2 edit on the account). Null: the provider reads CLOUDFLARE_API_TOKEN."
  type        = string
  sensitive   = true
  default     = null
}

# -- account and zone -------------------------------------------------------------------------
variable "cloudflare_account_id" {
  description = "Cloudflare account ID that owns the R2 buckets."
  type        = string
}

variable "cloudflare_zone_id" {
  description = "ID of the DNS zone of var.domain."
  type        = string
}

variable "domain" {
  description = "The cluster's public domain (DOMAIN), for example example.com."
  type        = string
}

# -- DNS ----------------------------------------------------------------------------------------
variable "nodes" {
  description = "Nodes that get <name>.<domain> records: name -> public addresses."
  type = map(object({
    ipv4    = string
    ipv6    = optional(string)
    proxied = optional(bool, false)
  }))
  default = {}
}

variable "services" {
  description = "Services that get <name>.<domain> as a CNAME to a node's record. Hosts served through the Gateway are managed by external-dns instead: do not list them here."
  type = map(object({
    node    = string
    proxied = optional(bool, false)
  }))
  default = {}
}

variable "dns_ttl" {
  description = "TTL of the records in seconds (1 = automatic)."
  type        = number
  default     = 300
}

# -- R2 -------------------------------------------------------------------------------------------
variable "r2_location" {
  description = "R2 location hint for new buckets (wnam, enam, weur, eeur, apac, oc)."
  type        = string
  default     = "weur"
}

variable "velero_bucket" {
  description = "R2 bucket for Velero backups (VELERO_BUCKET)."
  type        = string
}

variable "etcd_bucket" {
  description = "R2 bucket for K3s etcd snapshots (K3S_ETCD_S3_BUCKET)."
  type        = string
}

variable "etcd_snapshot_retention_days" {
  description = "Days an etcd snapshot object is kept in R2."
  type        = number
  default     = 30
}

variable "velero_expire_days" {
  description = "Safety-net expiry of Velero objects in days; 0 (the default) leaves expiry to Velero's own TTLs, as an age rule would break the kopia repository."
  type        = number
  default     = 0
}

variable "multipart_abort_days" {
  description = "Days after which unfinished multipart uploads are aborted, in both buckets."
  type        = number
  default     = 1
}
