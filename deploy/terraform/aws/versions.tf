# Warden on AWS: docs/DEPLOYMENT.md ("AWS with Terraform") describes what this
# builds, what each size costs, and the limits of the design.
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = merge(var.tags, { Application = "warden", Name = var.name })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

# The region's zones a to d (a closed set: a zone AWS adds later is not used
# until named here); local.azs takes the first az_count.
data "aws_availability_zones" "available" {
  state = "available"
  filter {
    name   = "zone-name"
    values = formatlist("%s%s", var.region, ["a", "b", "c", "d"])
  }
}
