variable "account_id" {
  description = "Cloudflare account ID."
  type        = string
}

variable "location" {
  description = "R2 location hint (wnam, enam, weur, eeur, apac, oc)."
  type        = string
  default     = "weur"
}

variable "velero_bucket" {
  description = "Bucket for Velero backups."
  type        = string
}

variable "etcd_bucket" {
  description = "Bucket for K3s etcd snapshots."
  type        = string
}

variable "etcd_snapshot_retention_days" {
  description = "Days an etcd snapshot object is kept."
  type        = number
  default     = 30

  validation {
    condition     = var.etcd_snapshot_retention_days >= 1
    error_message = "Keep etcd snapshots at least one day."
  }
}

variable "velero_expire_days" {
  description = "Safety-net expiry of Velero objects in days; 0 = none (Velero's TTLs decide)."
  type        = number
  default     = 0
}

variable "multipart_abort_days" {
  description = "Days after which unfinished multipart uploads are aborted."
  type        = number
  default     = 1
}
