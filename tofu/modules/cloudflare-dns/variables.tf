variable "zone_id" {
  description = "Cloudflare zone ID of var.domain."
  type        = string
}

variable "domain" {
  description = "Zone name; records are <name>.<domain>."
  type        = string
}

variable "nodes" {
  description = "name -> { ipv4, ipv6 (optional), proxied (optional) }."
  type = map(object({
    ipv4    = string
    ipv6    = optional(string)
    proxied = optional(bool, false)
  }))
  default = {}
}

variable "services" {
  description = "name -> { node, proxied (optional) }: CNAME <name>.<domain> -> <node>.<domain>."
  type = map(object({
    node    = string
    proxied = optional(bool, false)
  }))
  default = {}

  validation {
    condition     = alltrue([for s in values(var.services) : contains(keys(var.nodes), s.node)])
    error_message = "Every service's node must be one of var.nodes."
  }
}

variable "ttl" {
  description = "Record TTL in seconds (1 = automatic)."
  type        = number
  default     = 300
}
