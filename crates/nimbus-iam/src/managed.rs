//! The AWS managed policies a Lambda user expects to find, with AWS's
//! documents (abridged to the statements that matter for nimbus's services
//! where AWS's span dozens of services).

/// (name, path, description, document)
pub(crate) const AWS_MANAGED: &[(&str, &str, &str, &str)] = &[
    (
        "AWSLambdaBasicExecutionRole",
        "/service-role/",
        "Provides write permissions to CloudWatch Logs.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["logs:CreateLogGroup","logs:CreateLogStream","logs:PutLogEvents"],"Resource":"*"}]}"#,
    ),
    (
        "AWSLambdaExecute",
        "/",
        "Provides Put, Get access to S3 and full access to CloudWatch Logs.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["logs:*"],"Resource":"arn:aws:logs:*:*:*"},{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject"],"Resource":"arn:aws:s3:::*"}]}"#,
    ),
    (
        "AWSLambdaRole",
        "/service-role/",
        "Default policy for AWS Lambda service role.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:InvokeFunction"],"Resource":["*"]}]}"#,
    ),
    (
        "AWSLambda_FullAccess",
        "/",
        "Grants full access to AWS Lambda service and permissions to access related services.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:*","logs:DescribeLogGroups","logs:DescribeLogStreams","logs:GetLogEvents","logs:FilterLogEvents","logs:StartLiveTail","logs:StopLiveTail","iam:ListRoles","iam:GetRole","iam:GetPolicy","iam:GetPolicyVersion","iam:ListAttachedRolePolicies","iam:ListRolePolicies","iam:GetRolePolicy","s3:ListAllMyBuckets","s3:ListBucket","s3:GetBucketLocation"],"Resource":"*"},{"Effect":"Allow","Action":"iam:PassRole","Resource":"*","Condition":{"StringEquals":{"iam:PassedToService":"lambda.amazonaws.com"}}}]}"#,
    ),
    (
        "AWSLambda_ReadOnlyAccess",
        "/",
        "Grants read-only access to AWS Lambda service.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:Get*","lambda:List*","logs:DescribeLogGroups","logs:DescribeLogStreams","logs:GetLogEvents","logs:FilterLogEvents","iam:GetPolicy","iam:GetPolicyVersion","iam:GetRole","iam:GetRolePolicy","iam:ListAttachedRolePolicies","iam:ListRolePolicies","iam:ListRoles"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3ReadOnlyAccess",
        "/",
        "Provides read only access to all buckets via the AWS Management Console.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:Get*","s3:List*","s3:Describe*","s3-object-lambda:Get*","s3-object-lambda:List*"],"Resource":"*"}]}"#,
    ),
    (
        "AmazonS3FullAccess",
        "/",
        "Provides full access to all buckets via the AWS Management Console.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*","s3-object-lambda:*"],"Resource":"*"}]}"#,
    ),
    (
        "CloudWatchLogsFullAccess",
        "/",
        "Provides full access to CloudWatch Logs",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["logs:*","cloudwatch:GenerateQuery"],"Resource":"*"}]}"#,
    ),
    (
        "AdministratorAccess",
        "/",
        "Provides full access to AWS services and resources.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
    ),
    (
        "ReadOnlyAccess",
        "/",
        "Provides read-only access to AWS services and resources.",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["lambda:Get*","lambda:List*","logs:Describe*","logs:Get*","logs:FilterLogEvents","iam:Get*","iam:List*","s3:Get*","s3:List*","sts:GetCallerIdentity"],"Resource":"*"}]}"#,
    ),
];
