variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix of every resource name, and the Warden cluster name ([cluster] name)."
  type        = string
  default     = "warden"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2 to 21 lower-case letters, digits or '-', starting with a letter."
  }
}

variable "size" {
  description = "Size preset: small, medium or large (instance types, Auto Scaling bounds, database and cache sizes; docs/DEPLOYMENT.md gives the cost of each)."
  type        = string
  default     = "small"
  validation {
    condition     = contains(["small", "medium", "large"], var.size)
    error_message = "size must be small, medium or large."
  }
}

variable "az_count" {
  description = "Availability zones to spread subnets, instances, the database and the cache over."
  type        = number
  default     = 2
  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "vpc_cidr" {
  description = "The VPC's address range (a /16 is split into /24 subnets)."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && endswith(var.vpc_cidr, "/16")
    error_message = "vpc_cidr must be an IPv4 /16."
  }
}

variable "sip_client_cidrs" {
  description = "Where phones and trunks are: SIP (5060 UDP/TCP, 5061 TLS) and RTP (10000-20000 UDP) are open to these ranges only."
  type        = list(string)
  validation {
    condition     = length(var.sip_client_cidrs) > 0 && alltrue([for c in var.sip_client_cidrs : can(cidrhost(c, 0))])
    error_message = "sip_client_cidrs: one or more IPv4 CIDR ranges."
  }
}

variable "admin_client_cidrs" {
  description = "Who may reach the admin API through the Application Load Balancer (HTTPS 443)."
  type        = list(string)
  validation {
    condition     = length(var.admin_client_cidrs) > 0 && alltrue([for c in var.admin_client_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_client_cidrs: one or more IPv4 CIDR ranges."
  }
}

variable "load_balancers_internal" {
  description = "Internal load balancers (phones reach the VPC over VPN, Direct Connect or a transit gateway). RTP goes to the instances' private addresses either way (docs/DEPLOYMENT.md)."
  type        = bool
  default     = true
}

variable "admin_certificate_arn" {
  description = "ACM certificate of the admin API's HTTPS listener on the Application Load Balancer."
  type        = string
  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.admin_certificate_arn))
    error_message = "admin_certificate_arn must be an ACM certificate ARN."
  }
}

variable "sip_tls_certificate_arn" {
  description = "ACM certificate for SIP over TLS on 5061, terminated at the Network Load Balancer and passed to Warden over TCP; \"\" = no TLS listener."
  type        = string
  default     = ""
  validation {
    condition     = var.sip_tls_certificate_arn == "" || can(regex("^arn:aws[a-z-]*:acm:", var.sip_tls_certificate_arn))
    error_message = "sip_tls_certificate_arn must be \"\" or an ACM certificate ARN."
  }
}

variable "warden_wheel_key" {
  description = "Object key of Warden's wheel in the artifacts bucket (output artifacts_bucket); instances install it at boot."
  type        = string
  default     = "warden-0.1.0-py3-none-any.whl"
  validation {
    condition     = can(regex("^warden-[0-9][0-9A-Za-z.+]*-py3-none-any\\.whl$", var.warden_wheel_key))
    error_message = "warden_wheel_key must be a wheel file name such as warden-0.1.0-py3-none-any.whl."
  }
}

variable "domains" {
  description = "Domain names the PBX answers for ([server] domains); the first is the digest realm."
  type        = list(string)
  default     = []
}

variable "backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery) and ElastiCache snapshots."
  type        = number
  default     = 7
  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be 1..35."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarms topic; \"\" = none."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
